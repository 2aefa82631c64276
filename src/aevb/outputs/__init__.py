"""What a run produces for people: figures, the HTML report, exported models."""
