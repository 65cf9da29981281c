"""``python -m serving serve|predict ...`` (the same as ``taxifare serve|predict``)."""

import sys

from serving.cli import main

sys.exit(main())
