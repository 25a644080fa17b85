"""The prompt lab (pairs ranked against labels), evaluation of any scorer against labels, and
prompt design and filter calibration on labelled sets: pair search, learned weights, calibration."""
