package org.tflpipe.demo

import android.content.Context
import org.json.JSONObject
import org.tflpipe.imagecore.InputSpec

/**
 * What `tflpipe export android` wrote into the assets next to the model: the app learns the input
 * size, element type, quantization, normalization and labels from here, never from constants.
 */
data class ModelConfig(
    val modelFile: String,
    val labelsFile: String,
    val numClasses: Int,
    val input: InputSpec,
    val outputDType: InputSpec.DType,
    val outputScale: Float,
    val outputZeroPoint: Int,
) {
    companion object {
        const val ASSET = "model_config.json"
        private const val FORMAT = 1

        fun load(context: Context): ModelConfig =
            parse(context.assets.open(ASSET).bufferedReader().use { it.readText() })

        fun parse(text: String): ModelConfig {
            val root = JSONObject(text)
            val format = root.getInt("format")
            require(format == FORMAT) { "$ASSET has format $format, this app reads $FORMAT: re-run tflpipe export android" }
            val input = root.getJSONObject("input")
            val output = root.getJSONObject("output")
            return ModelConfig(
                modelFile = root.getString("model_file"),
                labelsFile = root.getString("labels_file"),
                numClasses = root.getInt("num_classes"),
                input = InputSpec(
                    input.getInt("height"),
                    input.getInt("width"),
                    InputSpec.parseDType(input.getString("dtype")),
                    input.getDouble("scale"),
                    input.getInt("zero_point"),
                    input.getDouble("mean"),
                    input.getDouble("std"),
                ),
                outputDType = InputSpec.parseDType(output.getString("dtype")),
                outputScale = output.getDouble("scale").toFloat(),
                outputZeroPoint = output.getInt("zero_point"),
            )
        }
    }
}
