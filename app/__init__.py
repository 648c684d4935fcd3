"""The chat's own code beside ``streamlit_app.py``, outside the library: ``session`` (per-request engines, sources,
feedback, the conversation as Markdown) and ``safety`` (red-flag messages that need emergency guidance first)."""
