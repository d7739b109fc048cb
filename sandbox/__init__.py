"""The product on a laptop: a Braze emulator, a moto-backed AWS, an HTTP gateway and a retry poller."""
