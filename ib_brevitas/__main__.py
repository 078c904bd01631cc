import sys

from ib_brevitas.cli import main

sys.exit(main())
