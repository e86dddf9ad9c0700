"""Training-time tools for the lip-sync network (the optional ``[train]`` extra): synthetic data with exact
phone timing, training with carried recurrent state, evaluation on real speech, and the animator export.

The app never imports this package; the animator export (`avatar lipsync`) lives in `avatar.lipsync`.
"""
