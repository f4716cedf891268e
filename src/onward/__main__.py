"""`python -m onward` is the `onward` command."""

from onward.cli import main

main()
