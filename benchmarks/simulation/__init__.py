"""The burst simulation (`make simulate`): the real services on models of Didomi, AWS and Braze, on a virtual clock."""
