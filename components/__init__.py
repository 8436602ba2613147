"""source-ip-edge: config.py (typed configuration), program.py, render.py (offline render), and one
folder per component (component.py beside the pure code that renders what it deploys)."""
