"""anonymize"""
