"""talking-avatar: a single face photo that talks, live, from a microphone."""
__version__ = "0.1.0"
