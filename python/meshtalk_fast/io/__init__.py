"""File formats that know nothing of the model: OBJ meshes and mask files, glTF morph targets, exports
(npz / OBJ sequences / glb / mp4) and the preview renderer."""
