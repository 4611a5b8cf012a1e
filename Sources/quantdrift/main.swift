import QuantDrift
print("quantdrift")
