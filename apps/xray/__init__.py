"""Pieces of the "Explain my X-ray" Gradio app (apps/xray_app.py): UI, API, analysis, report, uploads."""
