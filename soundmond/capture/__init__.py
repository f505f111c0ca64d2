"""Where audio comes from: the microphone, recordings, windowing, decode and resample."""
