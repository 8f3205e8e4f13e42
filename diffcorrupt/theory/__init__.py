"""The paper's Gaussian-mixture theory (section 7): its closed forms, and a simulation that checks them."""
