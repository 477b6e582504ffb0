import sys

from app.tools.cli import main

sys.exit(main())
