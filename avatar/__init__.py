"""talking-avatar: a single face photo that talks, live, from a microphone."""
import os

__version__ = "0.1.0"

# Set before OpenCV is imported (it reads this once): the most pixels cv2.imdecode, the photo loader's fallback
# for files Pillow cannot read, will decode (OpenCV's default is 2**30); the same limit as
# avatar.face.photo.MAX_FILE_PIXELS, which Pillow's path checks from the header
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "200000000")

# No network use at all: ONNX Runtime's telemetry (DNS look-ups for Microsoft's host, events queued under
# ~/.cache/Microsoft/) is off only when this is set before onnxruntime is first imported
# (ort.disable_telemetry_events() afterwards leaves both). This package's import is the earliest point that the
# app, the CLI, the tests and the desktop bundle (packaging/launcher.py imports avatar.cli) all pass through.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

# One BLAS thread: numpy's OpenBLAS starts a worker per core when numpy is imported, and the live app's matrix
# products are tiny (a 10 ms log-mel frame times the mel filters): split over threads, the helper spun in
# sched_yield between blocks and cost ~30 % of a core idle, more than the products themselves (measured with
# `avatar bench live-cpu`, README "Where the CPU goes"). Read once when numpy first loads, so it is set here, before
# anything imports numpy; a value the user set is kept. PyTorch (training) uses its own pools, not this one.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
