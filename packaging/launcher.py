"""Entry point of the PyInstaller bundle: the same `avatar` command as the pip install."""
import sys

# the first import of the package: avatar/__init__.py turns ONNX Runtime's telemetry off before anything can
# import onnxruntime (nothing above this line may)
from avatar.cli import main

if __name__ == "__main__":
    sys.exit(main())
