"""Where frames come from: video files (``files``) and live cameras (``live``).

Every source hands on ``Sample`` objects (``base``); each owns its capture,
its reader thread and its timers, and releases them itself when it stops.
"""
