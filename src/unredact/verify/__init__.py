"""Verification: does a modified model keep its capabilities, languages, cultural knowledge and safety?"""
