"""The QA report as one self-contained HTML page: figures, maps and a histogram embedded."""

from __future__ import annotations

import base64
import html
import json

import cv2
import numpy as np

from gateway.correction import CalibrationSet, DefectClass
from gateway.qa.report import QaReport
from gateway.qa.uniformity import ROI, roi_stats

MAP_SIDE = 384  # pixels of each embedded map

# BGR colours of the defect classes in the defect map (good pixels black).
CLASS_COLOURS = {
    DefectClass.DEAD: (255, 255, 255), DefectClass.HOT: (0, 0, 255), DefectClass.OVER: (0, 165, 255),
    DefectClass.UNDER: (255, 128, 0), DefectClass.NOISY: (0, 255, 255), DefectClass.LINE: (255, 0, 255),
    DefectClass.LAG: (0, 255, 0), DefectClass.CLUSTER: (128, 128, 255),
}


def render(report: QaReport, cal: CalibrationSet, flat: np.ndarray) -> str:
    """The page for `report`, with the maps of `cal` and one corrected flat of the report."""
    means, _ = roi_stats(flat, ROI)
    figures = {
        "offset map (counts)": _png(_grey(cal.offset)),
        "gain map": _png(_grey(cal.gain)),
        "defect map": _png(_defects(cal.defects)),
        f"signal non-uniformity ({ROI}x{ROI} ROI means / mean)": _png(_grey(means / means.mean(), nearest=True)),
    }
    rows = []
    for c in report.checks:
        before = report.trend.get(c.name) or []
        previous = f"{before[-1][1]:.5g}" if before else "-"
        rows.append(f"<tr><td>{html.escape(c.name)}</td><td>{c.value:.5g}</td><td>{c.limit:.5g}</td>"
                    f"<td>{previous}</td><td class={'pass' if c.passed else 'fail'}>"
                    f"{'pass' if c.passed else 'FAIL'}</td></tr>")
    legend = " ".join(f"<span style='color:rgb({r},{g},{b})'>&#9632; {c.name.lower()}</span>"
                      for c, (b, g, r) in CLASS_COLOURS.items())
    images = "".join(f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,{d}'>"
                     f"<figcaption>{html.escape(t)}</figcaption></figure>" for t, d in figures.items())
    result = "PASS" if report.passed else "FAIL"
    doc = json.dumps(report.to_dict(), indent=1).replace("</", "<\\/")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Detector QA {html.escape(report.detector_serial)}</title>
<style>body{{font-family:sans-serif;margin:2em}} td,th{{padding:2px 10px;text-align:right}}
td:first-child{{text-align:left}} .pass{{color:#070}} .fail{{color:#b00;font-weight:bold}}
figure{{display:inline-block;margin:8px}} img{{width:{MAP_SIDE}px;image-rendering:pixelated}}</style></head>
<body><h1>Detector QA: {html.escape(report.detector_serial)}, mode {html.escape(report.mode)} -
<span class={result.lower()}>{result}</span></h1>
<p>Calibration {html.escape(report.calibration_id)}; {report.flats} flat(s); {report.made_at:%Y-%m-%d %H:%M} UTC.
AAPM TG-150 method, {ROI}x{ROI}-pixel ROIs. Largest defect cluster {report.largest_cluster} pixels.</p>
<table><tr><th>check</th><th>value</th><th>limit</th><th>previous</th><th>result</th></tr>{"".join(rows)}</table>
<h2>Maps</h2>{images}<p>{legend}</p>
<h2>Histogram of a corrected flat</h2>{_histogram_svg(flat)}
{_linearity_svg(report)}
<script type="application/json" id="figures">{doc}</script>
</body></html>
"""


def _png(img: np.ndarray) -> str:
    ok, data = cv2.imencode(".png", img)
    if not ok:
        raise ValueError("PNG encoding failed")
    return base64.b64encode(data.tobytes()).decode()


def _grey(values: np.ndarray, *, nearest: bool = False) -> np.ndarray:
    """A map scaled to 0..255 between its 1st and 99th percentiles, MAP_SIDE wide."""
    v = values.astype(np.float32)
    lo, hi = (float(x) for x in np.percentile(v[::4, ::4] if v.size > 1 << 16 else v, (1, 99)))
    scaled = np.clip((v - lo) / max(hi - lo, 1e-12) * 255, 0, 255).astype(np.uint8)
    size = (MAP_SIDE, max(1, MAP_SIDE * v.shape[0] // v.shape[1]))
    return cv2.resize(scaled, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _defects(defects: np.ndarray) -> np.ndarray:
    """Colour per class; each output pixel shows the defects of its block (none is lost by scaling)."""
    block = max(1, -(-max(defects.shape) // MAP_SIDE))
    rows, cols = -(-defects.shape[0] // block), -(-defects.shape[1] // block)
    padded = np.zeros((rows * block, cols * block), np.uint8)
    padded[:defects.shape[0], :defects.shape[1]] = defects
    worst = padded.reshape(rows, block, cols, block).max(axis=(1, 3))
    lut = np.zeros((256, 3), np.uint8)
    for c, colour in CLASS_COLOURS.items():
        lut[int(c)] = colour
    return lut[worst]


def _histogram_svg(flat: np.ndarray, bins: int = 100) -> str:
    sample = flat[::2, ::2].ravel()
    lo, hi = (float(x) for x in np.percentile(sample, (0.1, 99.9)))
    counts, edges = np.histogram(sample, bins=bins, range=(lo, hi if hi > lo else lo + 1))
    top = max(int(counts.max()), 1)
    points = " ".join(f"{4 * i},{200 - 190 * n / top:.1f}" for i, n in enumerate(counts))
    return (f"<svg width='{4 * bins}' height='220' xmlns='http://www.w3.org/2000/svg'>"
            f"<polyline fill='none' stroke='black' points='{points}'/>"
            f"<text x='0' y='215' font-size='11'>{edges[0]:.0f}</text>"
            f"<text x='{4 * bins - 40}' y='215' font-size='11'>{edges[-1]:.0f}</text></svg>")


def _linearity_svg(report: QaReport) -> str:
    """Signal against mAs, with the fitted line through the origin."""
    lin = report.linearity
    if lin is None:
        return ""
    xmax, ymax = max(lin.mas) * 1.1, max(max(lin.signal), lin.counts_per_mas * max(lin.mas)) * 1.1

    def at(x: float, y: float) -> str:
        return f"{40 + 340 * x / xmax:.1f},{210 - 190 * y / ymax:.1f}"

    dots = "".join(f"<circle cx='{at(m, v).split(',')[0]}' cy='{at(m, v).split(',')[1]}' r='4'/>"
                   for m, v in zip(lin.mas, lin.signal, strict=True))
    return (f"<h2>Signal against dose (R&#178; {lin.r_squared:.5f})</h2>"
            f"<svg width='400' height='230' xmlns='http://www.w3.org/2000/svg'>"
            f"<polyline fill='none' stroke='#888' points='{at(0, 0)} {at(xmax, lin.counts_per_mas * xmax)}'/>"
            f"{dots}<text x='40' y='228' font-size='11'>0 mAs</text>"
            f"<text x='330' y='228' font-size='11'>{xmax:.2g} mAs</text>"
            f"<text x='0' y='20' font-size='11'>{ymax:.0f}</text></svg>")
