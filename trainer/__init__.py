"""edgepersona's trainer: event logs and tables in, signed persona bundles out.

Server-side only: it uses scikit-learn, onnx and pyarrow, which the device SDK
never imports. Modules: ``events`` (reading), ``features`` (batch features),
``suggest`` (zero-config specs), ``fit`` (weighted k-means), ``cards``,
``export_onnx``, ``export`` (signed bundles), ``train`` (the pipeline),
``keys`` and ``cli``.
"""

__all__: list[str] = []
