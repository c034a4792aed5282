"""`python -m alignment <stage> ...`, which is what `accelerate launch -m alignment <stage>` runs."""

from alignment.cli import main

main()
