"""The table's columns, as the silos' files name them (scikit-learn's names for the Wisconsin set)."""
MEASURES = ("radius", "texture", "perimeter", "area", "smoothness", "compactness", "concavity", "concave points",
            "symmetry", "fractal dimension")
FEATURES = [f"mean {m}" for m in MEASURES] + [f"{m} error" for m in MEASURES] + [f"worst {m}" for m in MEASURES]
LABEL = "diagnosis"
LABELS = ["malignant", "benign"]
