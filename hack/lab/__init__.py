"""The local lab: network namespaces with an HAProxy host (sshd), gateway stand-ins and visitors."""
