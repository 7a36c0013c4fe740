"""pushjobs.cli"""
