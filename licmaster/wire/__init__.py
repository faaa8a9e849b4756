"""The wire: frames and MessagePack (codec), request validation, reply shapes, the event schema
shared by the journal and the replica stream. Pure: no sockets."""
