"""Offline animation: speech file -> meshes (``offline.animate``) and rig outputs (``rig``)."""
