"""Image-set metrics (FID or a labelled Fréchet distance, KID, precision/recall), one file per concern, in
torch-fidelity's shape; the evaluate stage (:mod:`ganime_steps.evaluate`) is their CLI, training uses
:class:`~ganime_steps.metrics.generated.SnapshotMetric`.

- :mod:`.defaults`: every setting (KID subsets, k of precision/recall, the fewest samples, bootstrap and FID∞);
- :mod:`.distances`: Fréchet distance, KID, precision/recall on feature arrays, and :func:`feature_metrics`;
- :mod:`.uncertainty`: bootstrap intervals and FID∞ from the features already computed;
- :mod:`.features`: feature spaces, the Inception or classifier extractor, features in batches;
- :mod:`.images`: the one ``.npy`` image reader (:func:`load_packed`), resizing, image sets (npy, folder, zip);
- :mod:`.reference`: the reference ``.npz`` format (write, load, content hash, stale-pack and same-space checks);
- :mod:`.generated`: a generator's images → features → metrics, and the training snapshot metric;
- :mod:`.result`: :class:`Scores` and :class:`MetricResult`, the one record every producer writes.

Nothing is imported here: a module takes only what it needs (``images`` and ``defaults`` import no torch and no
Inception, so training's data code can read packs through :func:`~ganime_steps.metrics.images.load_packed`).
"""
