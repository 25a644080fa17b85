"""The prompt lab (pairs ranked against labels) and evaluation of any scorer against labels."""
