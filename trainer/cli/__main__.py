"""``python -m edgepersona.trainer.cli``: the same as the ``edgepersona`` command."""

from . import main

raise SystemExit(main())
