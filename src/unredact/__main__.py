"""`python -m unredact` runs the CLI."""

from unredact.cli import main

main()
