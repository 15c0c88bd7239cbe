"""The command line (``python -m app.cli``): parsing, output, and typed errors turned into exit codes."""

from app.cli.common import EXIT_ERROR as EXIT_ERROR
from app.cli.common import add_common_args as add_common_args
from app.cli.common import config_from_args as config_from_args
from app.cli.common import run as run
from app.cli.main import main as main
