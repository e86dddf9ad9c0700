"""The animation vocabulary shared by the network, the renderer and the exporters.

Visemes follow the 15-class set used by Oculus/Meta OVRLipSync (and most game tooling).
Mouth parameters are continuous, 0..1, one value per 10 ms frame:

- ``jaw_open``   0 = teeth together, 1 = the widest natural "aa".
- ``lip_spread`` 0 = relaxed corners, 1 = a wide "ee" smile spread.
- ``lip_round``  0 = relaxed, 1 = fully rounded/puckered "oo".
- ``lip_press``  0 = relaxed, 1 = lips pressed shut (p/b/m closure).
"""
from __future__ import annotations

VISEMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou")
N_VISEMES = len(VISEMES)  # 15
VISEME_INDEX = {name: i for i, name in enumerate(VISEMES)}

PARAM_NAMES = ("jaw_open", "lip_spread", "lip_round", "lip_press")
N_PARAMS = len(PARAM_NAMES)  # 4

# Canonical mouth pose of each viseme (jaw_open, lip_spread, lip_round, lip_press): the target a
# sustained viseme settles to. Training targets blend these with coarticulation; previews show them.
VISEME_POSE = {
    "sil": (0.00, 0.00, 0.00, 0.10),
    "PP": (0.00, 0.00, 0.00, 1.00),
    "FF": (0.12, 0.25, 0.00, 0.35),
    "TH": (0.22, 0.15, 0.00, 0.00),
    "DD": (0.25, 0.25, 0.00, 0.00),
    "kk": (0.30, 0.15, 0.00, 0.00),
    "CH": (0.20, 0.00, 0.65, 0.00),
    "SS": (0.10, 0.45, 0.00, 0.00),
    "nn": (0.18, 0.15, 0.00, 0.00),
    "RR": (0.25, 0.00, 0.45, 0.00),
    "aa": (0.90, 0.20, 0.00, 0.00),
    "E": (0.55, 0.50, 0.00, 0.00),
    "ih": (0.30, 0.60, 0.00, 0.00),
    "oh": (0.60, 0.00, 0.70, 0.00),
    "ou": (0.30, 0.00, 1.00, 0.00),
}

# Rhubarb Lip Sync's mouth shapes (A-F basic, G/H extended, X idle) for each viseme, for the TSV export.
RHUBARB_SHAPE = {
    "sil": "X", "PP": "A", "FF": "G", "TH": "B", "DD": "B", "kk": "B", "CH": "B", "SS": "B",
    "nn": "B", "RR": "E", "aa": "D", "E": "C", "ih": "B", "oh": "E", "ou": "F",
}
