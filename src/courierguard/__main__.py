"""``python -m courierguard``: the ``courierguard`` command, for a Python without the console script on PATH."""

from courierguard.cli.main import app

if __name__ == "__main__":
    app(prog_name="courierguard")
