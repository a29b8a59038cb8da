"""A contact sheet: one row per person, the best face first, then the good faces."""

from __future__ import annotations

import cv2
import numpy as np


def _tile(img: np.ndarray, side: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = side / max(h, w)
    small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    tile = np.full((side, side, 3), 32, np.uint8)
    y0, x0 = (side - small.shape[0]) // 2, (side - small.shape[1]) // 2
    tile[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    return tile


def contact_sheet(rows: list[tuple[str, list[np.ndarray]]], tile: int = 112, label_w: int = 150) -> np.ndarray:
    """(H, W, 3) uint8 RGB sheet from [(row label, [face images])]; the subject row can say so in its label."""
    if not rows:
        raise ValueError("contact_sheet needs at least one row")
    cols = max(1, max(len(imgs) for _, imgs in rows))
    pad = 4
    sheet = np.full((len(rows) * (tile + pad) + pad, label_w + cols * (tile + pad) + pad, 3), 16, np.uint8)
    for r, (label, imgs) in enumerate(rows):
        y = pad + r * (tile + pad)
        for line, text in enumerate(label.split("\n")[:4]):
            cv2.putText(sheet, text, (6, y + 22 + 22 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (235, 235, 235), 1, cv2.LINE_AA)
        for c, img in enumerate(imgs):
            x = label_w + pad + c * (tile + pad)
            sheet[y : y + tile, x : x + tile] = _tile(img, tile)
            if c == 0:  # the best face gets a frame
                cv2.rectangle(sheet, (x, y), (x + tile - 1, y + tile - 1), (80, 200, 80), 2)
    return sheet
