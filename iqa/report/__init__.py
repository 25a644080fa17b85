"""What is done with results: comparison and ranking, CSV and zip, filtering, charts."""
