"""TensorBoard event files (scalars and PNG images) written with the
`tensorboard` package alone, so no framework is needed to log."""

import struct
import time


class TensorBoardUnavailable(ImportError):
    pass


class SummaryWriter:
    """Appends scalar and image summaries to an event file in `log_dir`."""

    def __init__(self, log_dir):
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError as err:
            raise TensorBoardUnavailable(
                "TensorBoard logging needs the tensorboard package: "
                "pip install tensorboard"
            ) from err
        self._event_pb2, self._summary_pb2 = event_pb2, summary_pb2
        self._writer = EventFileWriter(str(log_dir))

    def _add(self, step, value):
        summary = self._summary_pb2.Summary(value=[value])
        event = self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary)
        self._writer.add_event(event)

    def scalar(self, tag, value, step):
        self._add(
            step, self._summary_pb2.Summary.Value(tag=tag, simple_value=float(value))
        )

    def image(self, tag, png, step):
        width, height = struct.unpack(">II", png[16:24])  # the PNG IHDR chunk
        image = self._summary_pb2.Summary.Image(
            height=height, width=width, colorspace=4, encoded_image_string=png
        )
        self._add(step, self._summary_pb2.Summary.Value(tag=tag, image=image))

    def flush(self):
        self._writer.flush()

    def close(self):
        self._writer.close()
