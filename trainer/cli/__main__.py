"""``python -m edgepersona.trainer.cli``: the same as the ``edgepersona`` command."""

from edgepersona.trainer.cli import main

raise SystemExit(main())
