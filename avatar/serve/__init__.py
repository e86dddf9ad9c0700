"""The local server for other programs: the OBS browser source and the input endpoint (avatar.serve.server)."""
