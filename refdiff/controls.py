"""Spatial controls with a known answer, MATH.md (19.15): controls linear in the image,
``c = H vec(x0)``, so that the ideal controlled denoiser is the exact oracle of the data
conditioned on ``H x0 = c``; and a toy Canny edge map for the digits.

Matrices act on a flattened (C=1) S x S image, row-major (``x.reshape(N, S*S)``).
"""

from __future__ import annotations

import numpy as np

from ._validate import check_array, check_finite_scalar, check_same_shape

__all__ = ["pool_matrix", "edge_matrix", "column_mask_matrix", "edge_map", "edge_iou"]


def _check_size(S, what):
    if not isinstance(S, int) or S < 2 or S % 2:
        raise ValueError(f"{what}: image size S must be an even int >= 2, got {S!r}")


def pool_matrix(S: int = 8):
    """2x2 average pooling, (S^2/4, S^2): ``c[a, b] = mean of x[2a:2a+2, 2b:2b+2]``.

    Parameters
    ----------
    S : int, default 8
        The image size (an even int >= 2).

    Returns
    -------
    numpy.ndarray (S^2/4, S^2)
        float64 H.

    Raises
    ------
    ValueError
        If ``S`` is not an even int >= 2.
    """
    _check_size(S, "pool_matrix")
    h = S // 2
    H = np.zeros((h * h, S * S))
    for a in range(h):
        for b in range(h):
            for u in range(2):
                for v in range(2):
                    H[a * h + b, (2 * a + u) * S + 2 * b + v] = 0.25
    return H


def edge_matrix(S: int = 8):
    """A fixed edge filter: horizontal differences ``c[i, j] = x[i, j+1] - x[i, j]``,
    (S (S-1), S^2).

    Parameters
    ----------
    S : int, default 8
        The image size (an even int >= 2).

    Returns
    -------
    numpy.ndarray (S (S-1), S^2)
        float64 H.

    Raises
    ------
    ValueError
        If ``S`` is not an even int >= 2.
    """
    _check_size(S, "edge_matrix")
    H = np.zeros((S * (S - 1), S * S))
    for i in range(S):
        for j in range(S - 1):
            H[i * (S - 1) + j, i * S + j + 1], H[i * (S - 1) + j, i * S + j] = 1.0, -1.0
    return H


def column_mask_matrix(S: int = 8, columns=(0, 1, 2, 3)):
    """Selection of the pixels in ``columns`` (the left half by default), (S len(cols), S^2).

    Parameters
    ----------
    S : int, default 8
        The image size (an even int >= 2).
    columns : iterable of int, default (0, 1, 2, 3)
        The selected columns (a non-empty subset of 0..S-1; duplicates ignored).

    Returns
    -------
    numpy.ndarray (S len(columns), S^2)
        float64 rows of the identity, row-major over (row, selected column).

    Raises
    ------
    ValueError
        If ``S`` is invalid or ``columns`` is empty or out of range.
    """
    _check_size(S, "column_mask_matrix")
    cols = sorted(set(int(c) for c in columns))
    if not cols or cols[0] < 0 or cols[-1] >= S:
        raise ValueError(f"column_mask_matrix: columns must be a non-empty subset of 0..{S - 1}, got {columns}")
    rows = [i * S + j for i in range(S) for j in cols]
    return np.eye(S * S)[rows]


def edge_map(x, threshold: float = 0.5):
    """Toy Canny: ``[|grad x| > threshold]`` with central differences (replicated border),
    x (N, 1, S, S) in [-1, 1]; returns float {0, 1} of the same shape.

    Parameters
    ----------
    x : array_like (N, 1, S, S)
        Images in [-1, 1].
    threshold : float, default 0.5
        The gradient-magnitude threshold.

    Returns
    -------
    numpy.ndarray (N, 1, S, S)
        float64 edge map in {0, 1}.

    Raises
    ------
    ValueError
        If ``x`` is not (N, 1, S, S).
    """
    check_array("x", x, ndim=4, finite=True)
    threshold = check_finite_scalar("threshold", threshold, low=0.0)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"edge_map: x must be (N, 1, S, S), got shape {x.shape}")
    p = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    gx = 0.5 * (p[:, :, 1:-1, 2:] - p[:, :, 1:-1, :-2])
    gy = 0.5 * (p[:, :, 2:, 1:-1] - p[:, :, :-2, 1:-1])
    return (np.hypot(gx, gy) > threshold).astype(np.float64)


def edge_iou(a, b) -> np.ndarray:
    """Per-sample intersection over union of two binary maps (1 where both are empty).

    Parameters
    ----------
    a, b : array_like (N, ...)
        Binary maps (entries > 0.5 count as 1).

    Returns
    -------
    numpy.ndarray (N,)
        The per-sample IoU.
    """
    check_array("a", a, min_ndim=1, finite=True)
    check_array("b", b, min_ndim=1, finite=True)
    check_same_shape(a=a, b=b)
    a, b = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    inter = (a & b).reshape(len(a), -1).sum(1)
    union = (a | b).reshape(len(a), -1).sum(1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)
