"""Floor 3: rows: reading tables and image trees, cleaning and counting them into the dataset, splitting, resampling."""
