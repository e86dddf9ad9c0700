"""Entry point of the PyInstaller bundle: the same `avatar` command as the pip install."""
import sys

from avatar.cli import main

if __name__ == "__main__":
    sys.exit(main())
