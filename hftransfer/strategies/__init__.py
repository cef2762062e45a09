"""Strategies: how knowledge moves from the source model to the target task, one module per
family. ``base`` holds the interface every strategy implements; ``finetune`` (full, partial-freeze,
scratch, with L2-SP and layer-wise rates), ``features`` (feature-extraction), ``peft`` (lora and
the PEFT plumbing) build on it; ``multitask`` builds on finetune and peft; ``distill``, ``fusion`` and ``dann``
(domain-adversarial) build on finetune and ``frozen``. The registry finds
them by name (``hftransfer ls`` lists them)."""
