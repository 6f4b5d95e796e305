"""Experiment configs, one file per experiment (``configs/<name>.py::get_config(variant)``); installed with the
package as ``jaxinpaint.configs`` so that commands find them from any directory."""
