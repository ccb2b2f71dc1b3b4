"""The stages' YAML presets (configs/<stage>/<preset>.yaml), installed as edgener.configs."""
