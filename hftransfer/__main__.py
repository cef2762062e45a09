"""``python -m hftransfer`` and ``accelerate launch -m hftransfer`` run the CLI."""
import sys

from .cli import main

sys.exit(main())
