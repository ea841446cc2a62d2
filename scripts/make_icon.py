"""Draw the application icon (resources/icons/convnest.png, plus .ico for Windows installers)."""

from pathlib import Path

import cv2
import numpy as np

ICONS = Path(__file__).resolve().parent.parent / "resources" / "icons"


def draw_icon(size: int = 256) -> np.ndarray:
    """Return the BGRA icon: a stylised axial slice with a heat spot on a rounded square."""
    radius = size * 3 // 16
    mask = np.zeros((size, size), np.uint8)
    cv2.rectangle(mask, (radius, 0), (size - radius, size), 255, -1)
    cv2.rectangle(mask, (0, radius), (size, size - radius), 255, -1)
    for cx, cy in [(radius, radius), (size - radius, radius), (radius, size - radius), (size - radius, size - radius)]:
        cv2.circle(mask, (cx, cy), radius, 255, -1)
    image = np.zeros((size, size, 4), np.uint8)
    image[..., :3] = (90, 50, 20)
    centre = (size // 2, size // 2)
    cv2.ellipse(image, centre, (size * 5 // 16, size * 3 // 8), 0, 0, 360, (235, 235, 235, 255), size // 25)
    cv2.ellipse(image, centre, (size * 62 // 256, size * 78 // 256), 0, 0, 360, (150, 150, 150, 255), -1)
    spot = np.zeros((size, size), np.float32)
    cv2.circle(spot, (size * 150 // 256, size * 105 // 256), size * 26 // 256, 1, -1)
    spot = cv2.GaussianBlur(spot, (0, 0), size * 12 / 256)
    spot /= spot.max()
    heat = cv2.applyColorMap((spot * 255).astype(np.uint8), cv2.COLORMAP_JET)
    alpha = spot[..., None] * 0.85
    image[..., :3] = (image[..., :3] * (1 - alpha) + heat * alpha).astype(np.uint8)
    image[..., 3] = mask
    return image


def main() -> None:
    """Write the PNG and a multi-size ICO."""
    ICONS.mkdir(parents=True, exist_ok=True)
    icon = draw_icon()
    cv2.imwrite(str(ICONS / "convnest.png"), icon)
    from PIL import Image

    rgba = Image.fromarray(cv2.cvtColor(icon, cv2.COLOR_BGRA2RGBA))
    rgba.save(ICONS / "convnest.ico", sizes=[(16, 16), (32, 32), (48, 48), (64, 64), (128, 128), (256, 256)])


if __name__ == "__main__":
    main()
