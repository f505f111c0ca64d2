"""soundmond: listens to the world through a microphone and reports how the soundscape is changing."""

__version__ = "0.1.0"
