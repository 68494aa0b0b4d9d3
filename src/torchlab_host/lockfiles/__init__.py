"""The locks (requirements/*.txt): their text (files), where pip finds their wheels (sources),
resolving them (resolve), downloading their wheels (download) and installing them (venv)."""
