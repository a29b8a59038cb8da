"""Faces of a reference video: detection, embeddings, people, quality, demographics (paper §3.2).

Heavy imports (dlib, scikit-learn, transformers) happen only when the functions run.
"""

from pvchat.faces.detect import Face, FaceEngine, face_distance

__all__ = ["Face", "FaceEngine", "face_distance"]
