package org.tflpipe.demo

import android.content.Context
import android.os.Build
import android.os.SystemClock
import androidx.camera.core.ImageProxy
import org.tensorflow.lite.Interpreter
import org.tensorflow.lite.gpu.CompatibilityList
import org.tensorflow.lite.gpu.GpuDelegate
import org.tensorflow.lite.nnapi.NnApiDelegate
import org.tflpipe.imagecore.Classifications
import org.tflpipe.imagecore.FpsMeter
import org.tflpipe.imagecore.FramePreprocessor
import org.tflpipe.imagecore.InputSpec
import org.tflpipe.imagecore.Labels
import org.tflpipe.imagecore.YuvConverter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/**
 * The ML side of the demo, separate from the UI: loads the exported model with the chosen delegate,
 * turns camera frames into input tensors with the pure-JVM imagecore (bit-exact with the Python
 * pipeline), runs LiteRT and reports top-k with timing to a [ClassifierListener].
 *
 * Not thread-safe: call everything from the camera's analysis thread (settings changes included).
 */
class ImageClassifierHelper(
    private val context: Context,
    private val listener: ClassifierListener,
    var threshold: Float = 0.1f,
    var numThreads: Int = 2,
    var maxResults: Int = 3,
    var delegate: Int = DELEGATE_CPU,
) {
    interface ClassifierListener {
        fun onError(message: String)

        /** A delegate could not be used; the classifier runs on [usedDelegate] instead. */
        fun onDelegateFallback(message: String, usedDelegate: Int)

        fun onResults(results: List<Classifications.Recognition>, timing: Timing)
    }

    data class Timing(val preprocessMs: Long, val inferenceMs: Long, val fps: Double)

    private var interpreter: Interpreter? = null
    private var gpuDelegate: GpuDelegate? = null
    private var nnApiDelegate: NnApiDelegate? = null
    private var config: ModelConfig? = null
    private var labels: List<String> = emptyList()
    private var preprocessor: FramePreprocessor? = null
    private var rgb = ByteArray(0)
    private var input: ByteBuffer? = null
    private var output: ByteBuffer? = null
    private val fpsMeter = FpsMeter(30)

    /** (Re)creates the interpreter with the current settings; falls back to CPU when a delegate fails. */
    fun setupImageClassifier() {
        clearImageClassifier()
        val cfg = try {
            ModelConfig.load(context).also { c ->
                labels = context.assets.open(c.labelsFile).use { Labels.read(it) }
                require(labels.size == c.numClasses) { "${labels.size} labels for ${c.numClasses} model outputs" }
            }
        } catch (e: Exception) {
            listener.onError("Cannot read the exported model (run `tflpipe export android RUN_DIR`): ${e.message}")
            return
        }
        val model = loadModel(cfg.modelFile)
        interpreter = try {
            Interpreter(model, optionsFor(delegate))
        } catch (e: Exception) {
            if (delegate == DELEGATE_CPU) {
                listener.onError("LiteRT cannot load ${cfg.modelFile}: ${e.message}")
                return
            }
            listener.onDelegateFallback("${DELEGATE_NAMES[delegate]} failed (${e.message}); running on CPU", DELEGATE_CPU)
            closeDelegates()
            try {
                Interpreter(model, optionsFor(DELEGATE_CPU))
            } catch (cpuError: Exception) {
                listener.onError("LiteRT cannot load ${cfg.modelFile}: ${cpuError.message}")
                return
            }
        }
        config = cfg
        preprocessor = FramePreprocessor(cfg.input)
        input = ByteBuffer.allocateDirect(cfg.input.byteSize()).order(ByteOrder.nativeOrder())
        val outBytes = cfg.numClasses * if (cfg.outputDType == InputSpec.DType.FLOAT32) 4 else 1
        output = ByteBuffer.allocateDirect(outBytes).order(ByteOrder.nativeOrder())
    }

    private fun optionsFor(choice: Int): Interpreter.Options {
        val options = Interpreter.Options().setNumThreads(numThreads).setUseXNNPACK(true)
        when (choice) {
            DELEGATE_GPU -> CompatibilityList().use { compatibility ->
                if (compatibility.isDelegateSupportedOnThisDevice) {
                    gpuDelegate = GpuDelegate(compatibility.bestOptionsForThisDevice).also { options.addDelegate(it) }
                } else {
                    listener.onDelegateFallback("GPU delegate is not supported on this device; running on CPU", DELEGATE_CPU)
                }
            }
            DELEGATE_NNAPI -> {
                if (Build.VERSION.SDK_INT >= Build.VERSION_CODES.P) {
                    nnApiDelegate = NnApiDelegate().also { options.addDelegate(it) }
                } else {
                    listener.onDelegateFallback("NNAPI needs Android 9 or later; running on CPU", DELEGATE_CPU)
                }
            }
        }
        return options
    }

    private fun loadModel(name: String): MappedByteBuffer =
        context.assets.openFd(name).use { fd ->
            FileInputStream(fd.fileDescriptor).use { stream ->
                stream.channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }

    fun clearImageClassifier() {
        interpreter?.close()
        interpreter = null
        closeDelegates()
    }

    private fun closeDelegates() {
        gpuDelegate?.close()
        gpuDelegate = null
        nnApiDelegate?.close()
        nnApiDelegate = null
    }

    /** Classifies one YUV_420_888 camera frame; the caller closes [image] afterwards. */
    fun classify(image: ImageProxy) {
        if (interpreter == null) {
            setupImageClassifier()
        }
        val interp = interpreter ?: return
        val cfg = config ?: return
        val pre = preprocessor ?: return
        val inBuf = input ?: return
        val outBuf = output ?: return

        val start = SystemClock.uptimeMillis()
        val (y, u, v) = image.planes
        if (u.pixelStride != v.pixelStride || u.rowStride != v.rowStride) {
            listener.onError("Unsupported YUV layout: U and V planes differ in stride")
            return
        }
        val size = image.width * image.height * 3
        if (rgb.size != size) rgb = ByteArray(size)
        YuvConverter.toRgb(y.buffer, u.buffer, v.buffer, image.width, image.height,
            y.rowStride, u.rowStride, u.pixelStride, rgb)
        inBuf.rewind()
        pre.preprocess(rgb, image.width, image.height, image.imageInfo.rotationDegrees, inBuf)
        inBuf.rewind()
        val preprocessed = SystemClock.uptimeMillis()

        outBuf.rewind()
        interp.run(inBuf, outBuf)
        val inferred = SystemClock.uptimeMillis()

        outBuf.rewind()
        val scores = if (cfg.outputDType == InputSpec.DType.FLOAT32) {
            FloatArray(cfg.numClasses).also { outBuf.asFloatBuffer().get(it) }
        } else {
            val raw = ByteArray(cfg.numClasses).also { outBuf.get(it) }
            Classifications.dequantize(raw, cfg.outputDType, cfg.outputScale, cfg.outputZeroPoint)
        }
        val results = Classifications.topK(scores, labels, maxResults, threshold)
        val fps = fpsMeter.tick(System.nanoTime())
        listener.onResults(results, Timing(preprocessed - start, inferred - preprocessed, fps))
    }

    companion object {
        const val DELEGATE_CPU = 0
        const val DELEGATE_GPU = 1
        const val DELEGATE_NNAPI = 2
        val DELEGATE_NAMES = listOf("CPU (XNNPACK)", "GPU", "NNAPI")
    }
}
