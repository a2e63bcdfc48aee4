"""scalingo"""
