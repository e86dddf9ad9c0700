"""talking-avatar: a single face photo that talks, live, from a microphone."""
import os

__version__ = "0.1.0"

# Set before OpenCV is imported (it reads this once): the most pixels cv2.imdecode, the photo loader's fallback
# for files Pillow cannot read, will decode (OpenCV's default is 2**30); the same limit as
# avatar.face.photo.MAX_FILE_PIXELS, which Pillow's path checks from the header
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "200000000")
