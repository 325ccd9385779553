"""The node: `meshnode up` hosting several interfaces in one process."""
